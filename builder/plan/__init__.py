"""builder.plan.graph"""
