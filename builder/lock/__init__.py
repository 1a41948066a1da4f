"""builder.lock.resolve"""
