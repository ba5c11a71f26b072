"""avflow.encoders"""
