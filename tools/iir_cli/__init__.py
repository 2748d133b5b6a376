"""`iir`: the command line for operators of an IIR gateway (keys, offline key generation)."""
