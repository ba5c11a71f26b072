"""avflow.pipelines"""
