"""Models: the shared base, the IntentClassifier LightningModule, and exporting plain Hugging Face folders."""
