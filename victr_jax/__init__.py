"""victr-jax: VicTR (video-conditioned text representations) in JAX/Flax."""
__version__ = "0.1.0"
