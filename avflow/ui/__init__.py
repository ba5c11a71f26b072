"""avflow.ui"""
