"""The exchange service (learner.py, trainer.py), its course store (store.py), and the client learners use (client.py)."""
