"""Allowed values of settings that the numerical modules check too (mpo, losses) and the configuration offers:
here, without torch, so the command line's help and checks do not import it."""

STYLES = ("paper", "balanced")                        # MPO factor shapes (mpo.factor_shapes)
CORE_SELECTIONS = ("auxiliary", "central", "all")     # the cores the alignment loss compares (losses)
