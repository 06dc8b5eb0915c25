"""shaver.report"""
