"""Controlled experiments on the world: arms x seeds, trained, evaluated and tabulated (`avflow experiment`)."""
