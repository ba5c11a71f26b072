"""avflow.flow"""
