"""The model registry (mBERT, XLM-R and the offline stand-ins, each named as such) and the builders of the offline
models."""
