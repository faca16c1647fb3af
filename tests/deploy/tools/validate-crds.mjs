// Validate prometheus-operator objects (JSON array on stdin) against the CRD schemas that
// @kubernetes-models/prometheus-operator compiles; print one JSON list of problems.
// Usage: node validate-crds.mjs NODE_MODULES_DIR < objects.json
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
const objects = JSON.parse(readFileSync(0, "utf8"));
const problems = [];
for (const object of objects) {
  const [group, version] = object.apiVersion.split("/");
  const file = join(modules, "@kubernetes-models/prometheus-operator", group, version, `${object.kind}.js`);
  let model;
  try {
    model = (await import(pathToFileURL(file).href))[object.kind];
  } catch (error) {
    problems.push(`${object.kind}: no schema (${error.message})`);
    continue;
  }
  try {
    new model(object).validate();
  } catch (error) {
    problems.push(`${object.kind} ${object.metadata.name}: ${error.message}`);
  }
}
process.stdout.write(JSON.stringify(problems));
