"""What the model could be worth at a site: the inputs and their sources, the net-value model, its
uncertainty, the use cases, their wording, and the calculator. Imports only cxr.core."""
