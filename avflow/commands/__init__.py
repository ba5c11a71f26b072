"""avflow.commands"""
