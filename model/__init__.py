"""What a logged model carries: networks, vocabulary, artifacts, the recommender and the pyfunc.

Nothing here imports the project's settings, Airflow, Spark or training code: this folder is shipped as the
logged model's code.
"""
