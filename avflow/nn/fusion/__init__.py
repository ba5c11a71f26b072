"""avflow.nn.fusion"""
