"""avflow.eval"""
