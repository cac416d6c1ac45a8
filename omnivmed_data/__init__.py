"""omnivmed_data"""
