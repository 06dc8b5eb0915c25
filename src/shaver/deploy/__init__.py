"""shaver.deploy"""
