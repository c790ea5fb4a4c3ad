"""The GPU run: bring wheels, tools and models to a GPU host without network, test, measure."""
