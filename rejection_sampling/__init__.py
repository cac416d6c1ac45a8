"""rejection_sampling"""
