"""Spiking parts: the time layouts, DSR and surrogate-gradient neurons, the training rules
(DSR, BPTT, OTTT) and the fast layout carried in two parts."""
