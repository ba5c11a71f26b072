"""avflow.train"""
