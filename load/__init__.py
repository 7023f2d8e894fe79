"""Load scenarios for Cadenza, driven through the official client (`python -m load w1 ...`)."""
