"""Learning from the stream: warm-started updates of a served model, new items admitted.

- :mod:`.weights`: a bundle's trainable model (``weights.pt``, or a training run's checkpoint);
- :mod:`.vocab`: items first seen after training, admitted past a count, their rows initialised;
- :mod:`.update`: one fine-tuning pass over the newest sessions plus a replay sample of older ones;
- :mod:`.guard`: the candidate against the serving model on the newest held-out sessions;
- :mod:`.incremental`: the incremental evaluation (windows in time order: score, then update).
"""
