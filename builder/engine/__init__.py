"""builder.engine.image_build"""
