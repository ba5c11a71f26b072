"""avflow.data"""
