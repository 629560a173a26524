"""Beyond one process: lorakit's methods inside the engines a user would use anyway.

The federated methods as a Flower app (:mod:`lorakit.distributed.flower`), RW-LoRA's token on Ray
actors, and the chain methods inside a transformers ``Trainer``; each is proved equal to lorakit's
own in-process simulator by a test. Each needs its optional extra (``lorakit[flower]``,
``lorakit[ray]``; transformers is a core dependency), imported only by the submodule that uses it.
"""
