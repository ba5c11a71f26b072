"""avflow.world"""
