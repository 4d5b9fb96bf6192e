"""What every Spark test module needs before it imports kindling_spark:
this checkout's package, in the driver and in Spark's Python workers (they
inherit the environment through the JVM), the build under test named by
ci/test.sh (KD_LIB / KD_CLI, as the package's KINDLING_LIB / KINDLING_CLI),
the reason Spark cannot start when Java is missing, and the command
that runs the JVM API's test driver."""
import os
import pathlib
import shutil
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPO / "spark-barrier"


def use_this_checkout():
    if str(PACKAGE_DIR) not in sys.path:
        sys.path.insert(0, str(PACKAGE_DIR))
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(PACKAGE_DIR) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [str(PACKAGE_DIR)] + paths if p)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if os.environ.get("KD_LIB"):
        os.environ.setdefault("KINDLING_LIB", os.environ["KD_LIB"])
    if os.environ.get("KD_CLI"):
        os.environ.setdefault("KINDLING_CLI", os.environ["KD_CLI"])


def java_missing():
    """None when a Java runtime is found, else why Spark cannot start."""
    home = os.environ.get("JAVA_HOME")
    if home and (pathlib.Path(home) / "bin" / "java").exists():
        return None
    if shutil.which("java"):
        return None
    return "Java not found (Spark needs Java 17: set JAVA_HOME or put java on PATH)"


def model_tool():
    """The command line that runs kindling-tests.jar's ModelTool (the JVM
    API's test driver) with the build's jars and pyspark's; skips the test
    with the reason when the jars or java are missing."""
    import pytest
    import pyspark

    build = pathlib.Path(os.environ.get("KD_BUILD_DIR") or (pathlib.Path(os.environ["KD_LIB"]).parent
                                                            if os.environ.get("KD_LIB") else REPO / "build"))
    jars = [build / "kindling.jar", build / "kindling-tests.jar", build / "libkindling_jni.so"]
    missing = [str(j) for j in jars if not j.is_file()]
    if missing:
        pytest.skip(f"the JVM API is not built ({', '.join(missing)} missing: build with javac 17, see java/CMakeLists.txt)")
    exe = shutil.which("java")
    if exe is None:
        pytest.skip("java not found")
    cp = os.pathsep.join([str(jars[0]), str(jars[1]), str(pathlib.Path(pyspark.__file__).parent / "jars" / "*")])
    return [exe, "-cp", cp, "org.kindling.spark.ModelTool"]
