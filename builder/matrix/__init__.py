"""builder.matrix.load"""
