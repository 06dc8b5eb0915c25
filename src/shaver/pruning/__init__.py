"""shaver.pruning"""
