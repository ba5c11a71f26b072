"""avflow.models"""
