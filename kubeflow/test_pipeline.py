"""Compiles the example pipelines of pipeline.py with the real kfp SDK and checks, in the
compiled spec, what the README promises: the push step's inputs, the secret, the outputs, and
that component.yaml is the same component as the Python one.

Run it with the Python of scripts/setup.sh:  .venv/bin/python kubeflow/test_pipeline.py
(tests/all/kubeflow.rs runs it as part of `cargo xtask test`).
"""

import os
import sys
import tempfile
import unittest

import yaml
from kfp import compiler, components

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import pipeline  # noqa: E402  (found through the path set just above)

PUSH_TASK = "push-model"
PUSH_EXECUTOR = "exec-push-model"
SEED_PARAMETERS = ["repo_owner_name", "repo_name", "model_name", "stage", "param_path"]


def compile_to_documents(pipeline_func):
    """The compiled YAML's documents: the pipeline spec, then the platform spec if any."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pipeline.yaml")
        compiler.Compiler().compile(pipeline_func, path)
        with open(path) as compiled:
            return list(yaml.safe_load_all(compiled))


def compile_component(component):
    """A component compiled on its own: its interface and its container."""
    (spec,) = compile_to_documents(component)
    (definition,) = spec["components"].values()
    (executor,) = spec["deploymentSpec"]["executors"].values()
    return definition, executor["container"]


def arg_after(args, flag):
    index = args.index(flag)
    return args[index + 1]


class EnvironmentSecretPipeline(unittest.TestCase):
    """The main route: the token comes from the secret as an environment variable."""

    @classmethod
    def setUpClass(cls):
        cls.spec, cls.platform = compile_to_documents(pipeline.spam_detection_pipeline)
        cls.task = cls.spec["root"]["dag"]["tasks"][PUSH_TASK]
        cls.component = cls.spec["components"][cls.task["componentRef"]["name"]]
        cls.container = cls.spec["deploymentSpec"]["executors"][PUSH_EXECUTOR]["container"]
        cls.executor_platform = cls.platform["platforms"]["kubernetes"]["deploymentSpec"][
            "executors"
        ][PUSH_EXECUTOR]

    def test_push_takes_the_model_from_train_and_the_metrics_from_evaluate(self):
        artifacts = self.task["inputs"]["artifacts"]
        self.assertEqual(
            artifacts["model"]["taskOutputArtifact"],
            {"producerTask": "train", "outputArtifactKey": "model"},
        )
        self.assertEqual(
            artifacts["metrics"]["taskOutputArtifact"],
            {"producerTask": "evaluate", "outputArtifactKey": "metrics"},
        )

    def test_push_takes_the_seeds_parameters_from_the_pipeline(self):
        parameters = self.task["inputs"]["parameters"]
        expected = {name: name for name in SEED_PARAMETERS}
        expected["param_path"] = "param_file_path"  # the seed's pipeline parameter name
        self.assertEqual(
            {name: value["componentInputParameter"] for name, value in parameters.items()},
            expected,
        )

    def test_no_credential_is_a_pipeline_parameter(self):
        names = list(self.spec["root"]["inputDefinitions"]["parameters"])
        for name in names:
            for word in ("token", "password", "dagshub_username"):
                self.assertNotIn(word, name)
        # The seed's --dagshub-token put the token itself on the command line.
        self.assertNotIn("--dagshub-token", self.container["args"])
        self.assertNotIn("dagshub_token_file", self.task["inputs"]["parameters"])
        self.assertNotIn("env", self.container)

    def test_token_and_user_come_from_the_secret_as_environment_variables(self):
        (secret,) = self.executor_platform["secretAsEnv"]
        self.assertEqual(secret["secretName"], "dagshub-credentials")
        self.assertEqual(
            {pair["secretKey"]: pair["envVar"] for pair in secret["keyToEnv"]},
            {"token": "DAGSHUB_USER_TOKEN", "username": "MLFLOW_TRACKING_USERNAME"},
        )
        self.assertNotIn("secretAsVolume", self.executor_platform)

    def test_params_yaml_is_mounted_from_a_config_map_where_param_path_points(self):
        (config_map,) = self.executor_platform["configMapAsVolume"]
        self.assertEqual(config_map["configMapName"], "model-pusher-params")
        default = self.spec["root"]["inputDefinitions"]["parameters"]["param_file_path"]
        self.assertEqual(default["defaultValue"], config_map["mountPath"] + "/params.yaml")

    def test_outputs_are_the_verdict_parameter_the_decision_and_a_markdown_report(self):
        outputs = self.component["outputDefinitions"]
        self.assertEqual(outputs["parameters"], {"verdict": {"parameterType": "STRING"}})
        self.assertEqual(
            {name: value["artifactType"]["schemaTitle"] for name, value in outputs["artifacts"].items()},
            {"decision": "system.Artifact", "comparison": "system.Markdown"},
        )

    def test_the_binary_writes_each_output_where_kubeflow_reads_it(self):
        args = self.container["args"]
        self.assertEqual(self.container["command"], ["/usr/local/bin/model-pusher", "push"])
        self.assertEqual(
            arg_after(args, "--verdict-out"), "{{$.outputs.parameters['verdict'].output_file}}"
        )
        self.assertEqual(
            arg_after(args, "--decision-out"), "{{$.outputs.artifacts['decision'].path}}"
        )
        self.assertEqual(
            arg_after(args, "--markdown-out"), "{{$.outputs.artifacts['comparison'].path}}"
        )
        self.assertEqual(arg_after(args, "--model-path"), "{{$.inputs.artifacts['model'].path}}")
        self.assertEqual(
            arg_after(args, "--metrics-path"), "{{$.inputs.artifacts['metrics'].path}}"
        )
        self.assertEqual(arg_after(args, "--pipeline-run-id"), "{{$.pipeline_job_uuid}}")

    def test_push_is_never_served_from_the_cache(self):
        self.assertFalse(self.task["cachingOptions"].get("enableCache", False))


class VolumeSecretPipeline(unittest.TestCase):
    """The other route: the secret mounted as files, the token file named by an input."""

    @classmethod
    def setUpClass(cls):
        cls.spec, cls.platform = compile_to_documents(
            pipeline.spam_detection_pipeline_token_file
        )
        cls.task = cls.spec["root"]["dag"]["tasks"][PUSH_TASK]
        cls.executor_platform = cls.platform["platforms"]["kubernetes"]["deploymentSpec"][
            "executors"
        ][PUSH_EXECUTOR]

    def test_secret_is_mounted_and_the_token_file_input_points_into_it(self):
        (secret,) = self.executor_platform["secretAsVolume"]
        self.assertEqual(secret["secretName"], "dagshub-credentials")
        token_file = self.task["inputs"]["parameters"]["dagshub_token_file"]
        self.assertEqual(
            token_file["runtimeValue"]["constant"], secret["mountPath"] + "/token"
        )
        self.assertNotIn("secretAsEnv", self.executor_platform)


class ComponentYaml(unittest.TestCase):
    """component.yaml and the Python component are one component."""

    @classmethod
    def setUpClass(cls):
        cls.loaded = components.load_component_from_file(os.path.join(HERE, "component.yaml"))

    def test_component_yaml_has_the_python_components_inputs_and_outputs(self):
        def interface(spec):
            return (
                {name: (i.type, i.optional, i.default) for name, i in spec.inputs.items()},
                {name: o.type for name, o in spec.outputs.items()},
            )

        self.assertEqual(
            interface(self.loaded.component_spec),
            interface(pipeline.push_model.component_spec),
        )
        inputs, outputs = interface(self.loaded.component_spec)
        self.assertEqual(inputs["model"][0], "system.Model@0.0.1")
        self.assertEqual(inputs["metrics"][0], "system.Metrics@0.0.1")
        self.assertEqual(outputs["comparison"], "system.Markdown@0.0.1")
        self.assertEqual(outputs["verdict"], "String")

    def test_component_yaml_compiles_to_the_python_components_container(self):
        from_yaml = compile_component(self.loaded)
        from_python = compile_component(pipeline.push_model)
        self.assertEqual(from_yaml, from_python)


if __name__ == "__main__":
    unittest.main(verbosity=2)
