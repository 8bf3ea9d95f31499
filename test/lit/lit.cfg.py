# lit configuration for bitloom: one file per dialect feature or pass.
import os
import lit.formats

config.name = "bitloom"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mlir", ".test"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.bitloom_build_dir, "test", "lit")
config.excludes = ["CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py.in", "Inputs"]

tools = [
    os.path.join(config.bitloom_tools_dir, "bitloom-opt"),
    os.path.join(config.bitloom_tools_dir, "bitloom"),
]
config.environment["PATH"] = os.pathsep.join(
    [os.path.join(config.bitloom_tools_dir, "bitloom-opt"),
     os.path.join(config.bitloom_tools_dir, "bitloom"),
     os.path.join(config.bitloom_tools_dir, "bitloom-run"),
     config.llvm_tools_dir, config.environment.get("PATH", os.environ["PATH"])])
config.substitutions.append(("%inputs", os.path.join(config.test_source_root, "Inputs")))
config.substitutions.append(("%srcroot", config.bitloom_src_dir))
config.substitutions.append(("%python", "/usr/bin/python3"))
