"""shaver.data"""
