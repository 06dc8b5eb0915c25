"""shaver.models"""
