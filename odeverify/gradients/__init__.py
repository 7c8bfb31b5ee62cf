"""Gradient modes (L4): every way a Neural ODE is differentiated, as a reference."""
