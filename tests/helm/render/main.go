// Command render renders a Helm v3 chart the way `helm template` does, with
// the engine Helm itself uses (Go's text/template plus sprig) and the few
// functions Helm adds on top, so that the chart can be tested where no helm
// binary can be installed.
//
//	render [-name RELEASE] [-namespace NS] [-f values.yaml]... [-notes] CHART_DIR
//
// It prints every rendered template under templates/ (except partials,
// whose names start with "_", and NOTES.txt) as one multi-document YAML
// stream, each document headed by "# Source: <chart>/templates/<file>" as
// helm prints it; with -notes it prints the rendered NOTES.txt instead. A
// template error (including a `required` or `fail`) is printed on stderr and
// the exit code is 1.
//
// What it copies from Helm 3 (pkg/engine, pkg/chartutil): the template
// names ("<chart>/templates/<file>"), `missingkey=zero` with "<no value>"
// erased from the output, sprig's function map without env/expandenv, Helm's
// include/required/toYaml/fromYaml/toJson/fromJson/tpl, values read with
// sigs.k8s.io/yaml (numbers become float64, as in Helm), values files
// coalesced over the chart's values.yaml (maps merge deeply, a null removes
// the key), and .Release/.Chart/.Template. It has no .Capabilities, lookup,
// .Files or subcharts: a chart that uses them fails here with a clear
// "function not defined" or nil error rather than rendering something else.
//
// Built offline in GOPATH mode from Debian's packages golang-go,
// golang-github-masterminds-sprig-dev and golang-k8s-sigs-yaml-dev.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig" // v3; Debian installs it without /v3
	"sigs.k8s.io/yaml"
)

// recursionMaxNums bounds nested include/tpl calls, as in Helm.
const recursionMaxNums = 1000

type valueFiles []string

func (v *valueFiles) String() string     { return strings.Join(*v, ",") }
func (v *valueFiles) Set(s string) error { *v = append(*v, s); return nil }

func main() {
	name := flag.String("name", "release-name", "release name (.Release.Name)")
	namespace := flag.String("namespace", "default", "release namespace (.Release.Namespace)")
	notes := flag.Bool("notes", false, "print the rendered NOTES.txt instead of the manifests")
	var files valueFiles
	flag.Var(&files, "f", "values file coalesced over the chart's values.yaml (repeatable; later wins)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: render [-name RELEASE] [-namespace NS] [-f values.yaml]... [-notes] CHART_DIR")
		os.Exit(2)
	}
	if err := validateReleaseName(*name); err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		os.Exit(1)
	}
	out, err := render(flag.Arg(0), *name, *namespace, files, *notes)
	if err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		os.Exit(1)
	}
	os.Stdout.WriteString(out)
}

// validateReleaseName refuses the names Helm refuses (chartutil.ValidateReleaseName).
func validateReleaseName(name string) error {
	if name == "" || len(name) > 53 || !releaseName.MatchString(name) {
		return fmt.Errorf("invalid release name %q: a DNS-1123 subdomain of at most 53 characters", name)
	}
	return nil
}

var releaseName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

func render(chartDir, releaseName, namespace string, files []string, notes bool) (string, error) {
	chartMeta, err := readYAMLFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return "", err
	}
	chartName, _ := chartMeta["name"].(string)
	if chartName == "" {
		return "", fmt.Errorf("Chart.yaml: name is required")
	}
	if chartMeta["apiVersion"] != "v2" {
		return "", fmt.Errorf("Chart.yaml: apiVersion must be v2 (Helm 3), got %v", chartMeta["apiVersion"])
	}
	values, err := readYAMLFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return "", err
	}
	for _, file := range files {
		override, err := readYAMLFile(file)
		if err != nil {
			return "", err
		}
		values = coalesce(override, values)
	}

	// Every file under templates/, named as Helm names them.
	templatesDir := filepath.Join(chartDir, "templates")
	var names []string
	sources := map[string]string{}
	err = filepath.Walk(templatesDir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, err := filepath.Rel(templatesDir, p)
		if err != nil {
			return err
		}
		text, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		name := path.Join(chartName, "templates", filepath.ToSlash(rel))
		names = append(names, name)
		sources[name] = string(text)
		return nil
	})
	if err != nil {
		return "", err
	}
	sort.Strings(names)

	t := template.New("gotpl").Option("missingkey=zero")
	t.Funcs(funcMap(t))
	for _, name := range names {
		if _, err := t.New(name).Parse(sources[name]); err != nil {
			return "", err
		}
	}

	top := map[string]interface{}{
		"Values": values,
		"Release": map[string]interface{}{
			"Name":      releaseName,
			"Namespace": namespace,
			"Service":   "Helm",
			"IsInstall": true,
			"IsUpgrade": false,
			"Revision":  1,
		},
		"Chart": chartObject(chartMeta),
	}

	var out strings.Builder
	for _, name := range names {
		base := path.Base(name)
		isNotes := base == "NOTES.txt"
		if strings.HasPrefix(base, "_") || isNotes != notes {
			continue
		}
		if !isNotes && !strings.HasSuffix(base, ".yaml") && !strings.HasSuffix(base, ".yml") {
			continue
		}
		data := map[string]interface{}{}
		for k, v := range top {
			data[k] = v
		}
		data["Template"] = map[string]interface{}{
			"Name":     name,
			"BasePath": path.Join(chartName, "templates"),
		}
		var buf strings.Builder
		if err := t.ExecuteTemplate(&buf, name, data); err != nil {
			return "", cleanupError(err)
		}
		text := strings.ReplaceAll(buf.String(), "<no value>", "")
		if isNotes {
			out.WriteString(text)
			continue
		}
		if strings.TrimSpace(text) == "" {
			continue
		}
		fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", name, text)
	}
	return out.String(), nil
}

// funcMap is sprig's text function map plus Helm's own functions, as in
// Helm's pkg/engine/funcs.go and engine.go.
func funcMap(t *template.Template) template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")

	f["toYaml"] = toYAML
	f["fromYaml"] = fromYAML
	f["toJson"] = toJSON
	f["fromJson"] = fromJSON

	included := map[string]int{}
	f["include"] = func(name string, data interface{}) (string, error) {
		if included[name] > recursionMaxNums {
			return "", fmt.Errorf("rendering template has a nested reference name: %s", name)
		}
		included[name]++
		defer func() { included[name]-- }()
		var buf strings.Builder
		err := t.ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}
	f["tpl"] = func(text string, data interface{}) (string, error) {
		clone, err := t.Clone()
		if err != nil {
			return "", err
		}
		parsed, err := clone.New("tpl").Parse(text)
		if err != nil {
			return "", err
		}
		var buf strings.Builder
		if err := parsed.Execute(&buf, data); err != nil {
			return "", err
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	f["required"] = func(warn string, val interface{}) (interface{}, error) {
		if val == nil {
			return val, fmt.Errorf("%s", warn)
		}
		if s, ok := val.(string); ok && s == "" {
			return val, fmt.Errorf("%s", warn)
		}
		return val, nil
	}
	return f
}

// cleanupError turns text/template's "template: NAME:L:C: executing ...
// error calling required: MESSAGE" into Helm's "execution error at
// (NAME:L:C): MESSAGE".
func cleanupError(err error) error {
	msg := err.Error()
	const calling = "error calling "
	if i := strings.LastIndex(msg, calling); i >= 0 && strings.HasPrefix(msg, "template: ") {
		rest := msg[i+len(calling):]
		if j := strings.Index(rest, ": "); j >= 0 {
			fn, message := rest[:j], rest[j+2:]
			if fn == "required" || fn == "fail" {
				location := strings.TrimPrefix(msg, "template: ")
				if k := strings.Index(location, ": "); k >= 0 {
					location = location[:k]
				}
				return fmt.Errorf("execution error at (%s): %s", location, message)
			}
		}
	}
	return err
}

func toYAML(v interface{}) string {
	data, err := yaml.Marshal(v)
	if err != nil {
		// Helm swallows the error here too.
		return ""
	}
	return strings.TrimSuffix(string(data), "\n")
}

func fromYAML(str string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := yaml.Unmarshal([]byte(str), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func toJSON(v interface{}) string {
	data, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(data)
}

func fromJSON(str string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := json.Unmarshal([]byte(str), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func readYAMLFile(file string) (map[string]interface{}, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	m := map[string]interface{}{}
	if err := yaml.Unmarshal(bytes.TrimSpace(data), &m); err != nil {
		return nil, fmt.Errorf("%s: %v", file, err)
	}
	if m == nil {
		m = map[string]interface{}{}
	}
	return m, nil
}

// coalesce merges src (the user's values) over dst (the chart's defaults)
// as Helm's chartutil.CoalesceValues does: maps merge key by key, any other
// value replaces, and a null removes the key.
func coalesce(src, dst map[string]interface{}) map[string]interface{} {
	out := map[string]interface{}{}
	for k, v := range dst {
		out[k] = v
	}
	for k, v := range src {
		if v == nil {
			delete(out, k)
			continue
		}
		srcMap, srcIsMap := v.(map[string]interface{})
		dstMap, dstIsMap := out[k].(map[string]interface{})
		if srcIsMap && dstIsMap {
			out[k] = coalesce(srcMap, dstMap)
		} else {
			out[k] = v
		}
	}
	return out
}

// chartObject is .Chart: Chart.yaml's fields under the names of Helm's
// chart.Metadata struct (name → Name, appVersion → AppVersion, ...).
func chartObject(meta map[string]interface{}) map[string]interface{} {
	special := map[string]string{"apiVersion": "APIVersion"}
	out := map[string]interface{}{}
	for k, v := range meta {
		key, ok := special[k]
		if !ok {
			key = strings.ToUpper(k[:1]) + k[1:]
		}
		out[key] = v
	}
	for _, key := range []string{"Name", "Version", "AppVersion", "Description", "Type"} {
		if _, ok := out[key]; !ok {
			out[key] = ""
		}
	}
	return out
}
