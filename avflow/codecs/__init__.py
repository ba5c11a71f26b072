"""avflow.codecs"""
