"""shaver.train"""
