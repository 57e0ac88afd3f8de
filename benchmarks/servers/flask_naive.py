"""The naive pattern most tutorials (and the seeds' Example 8-1) show: a Flask app that loads
the SavedModel once and runs it once per request, speaking TF Serving's REST row format.

    python -m benchmarks.servers.flask_naive MODEL_VERSION_DIR PORT
"""

from __future__ import annotations

import sys

import numpy as np
import tensorflow as tf
from flask import Flask, jsonify, request

app = Flask(__name__)
model = tf.saved_model.load(sys.argv[1])
predict = model.signatures["serving_default"]


@app.route("/v1/models/<name>:predict", methods=["POST"])
def serve(name: str):
    instances = np.asarray(request.get_json()["instances"], dtype=np.float32)
    outputs = predict(x=tf.constant(instances))
    return jsonify({"predictions": outputs["y"].numpy().tolist()})


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[2]), threaded=True)
