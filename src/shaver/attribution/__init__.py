"""shaver.attribution"""
