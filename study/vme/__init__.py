"""The VME objective in torch (Ding et al. 2022): the loss terms, attention capture at one layer, the fast training
step, vocabulary trimming, and the checks that the fast step equals the reference."""
