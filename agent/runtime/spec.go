package runtime

import (
	"fmt"
	"slices"
	"strings"
)

// This file checks tensor specs against each other and requests against
// specs. Every check returns human-readable problems rather than stopping at
// the first, so one error tells the operator (or the client) everything that
// is wrong.

// checkSpecs reports what makes declared specs unusable on their own,
// before any model is loaded. kind is "input" or "output".
func checkSpecs(kind string, specs []TensorSpec) []string {
	var problems []string
	if len(specs) == 0 {
		return []string{fmt.Sprintf("no %ss are declared", kind)}
	}
	seen := make(map[string]bool, len(specs))
	for i, s := range specs {
		switch {
		case s.Name == "":
			problems = append(problems, fmt.Sprintf("%s #%d has no name", kind, i))
			continue
		case seen[s.Name]:
			problems = append(problems, fmt.Sprintf("%s %q is declared twice", kind, s.Name))
			continue
		}
		seen[s.Name] = true
		if !s.ElemType.supported() {
			problems = append(problems, fmt.Sprintf("%s %q has element type %q, which the agent does not support (supported: %s)",
				kind, s.Name, s.ElemType, supportedList()))
		}
		if len(s.Shape) == 0 {
			problems = append(problems, fmt.Sprintf("%s %q has no dimensions; scalar tensors are not supported", kind, s.Name))
		}
		for j, d := range s.Shape {
			if d < 1 && d != Dynamic {
				problems = append(problems, fmt.Sprintf("%s %q: dimension %d is %d; use a size of at least 1, or -1 for a size chosen per request",
					kind, s.Name, j, d))
			}
		}
	}
	return problems
}

// matchSpecs reports where the declared specs disagree with the model's own
// (from ONNX Runtime). Every declared tensor must exist in the model with
// the same element type and rank; a fixed declared dimension must equal the
// model's or narrow a dynamic one; a dynamic declared dimension must be
// dynamic in the model too, or clients following the spec would send sizes
// the model refuses. For inputs, every model input must be declared (the
// session cannot run without it); outputs may be a subset.
func matchSpecs(kind string, declared, model []TensorSpec) []string {
	var problems []string
	byName := make(map[string]TensorSpec, len(model))
	for _, m := range model {
		byName[m.Name] = m
	}
	declaredNames := make(map[string]bool, len(declared))
	for _, d := range declared {
		declaredNames[d.Name] = true
		m, ok := byName[d.Name]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s %q is declared but the model has no such %s (model %ss: %s)",
				kind, d.Name, kind, kind, describeSpecs(model)))
			continue
		}
		if d.ElemType != m.ElemType {
			problems = append(problems, fmt.Sprintf("%s %q is declared %s, the model's is %s", kind, d.Name, d.ElemType, m.ElemType))
		}
		if len(d.Shape) != len(m.Shape) {
			problems = append(problems, fmt.Sprintf("%s %q is declared with shape %s (rank %d), the model's is %s (rank %d)",
				kind, d.Name, formatShape(d.Shape), len(d.Shape), formatShape(m.Shape), len(m.Shape)))
			continue
		}
		for i := range d.Shape {
			dd, md := d.Shape[i], m.Shape[i]
			switch {
			case dd == md, md == Dynamic:
				// Equal, or a fixed size narrowing a dynamic one.
			case dd == Dynamic:
				problems = append(problems, fmt.Sprintf("%s %q is declared with shape %s, the model's is %s: dimension %d is fixed at %d in the model, not chosen per request",
					kind, d.Name, formatShape(d.Shape), formatShape(m.Shape), i, md))
			default:
				problems = append(problems, fmt.Sprintf("%s %q is declared with shape %s, the model's is %s: dimension %d is %d in the model",
					kind, d.Name, formatShape(d.Shape), formatShape(m.Shape), i, md))
			}
		}
	}
	if kind == "input" {
		for _, m := range model {
			if !declaredNames[m.Name] {
				problems = append(problems, fmt.Sprintf("model input %s is not declared", m))
			}
		}
	}
	return problems
}

// describeSpecs lists specs for messages, or says there are none.
func describeSpecs(specs []TensorSpec) string {
	if len(specs) == 0 {
		return "none"
	}
	parts := make([]string, len(specs))
	for i, s := range specs {
		parts[i] = s.String()
	}
	return strings.Join(parts, ", ")
}

// validateInputs checks a request against the input specs. It allocates
// only when it finds a problem.
func validateInputs(specs []TensorSpec, inputs map[string]Tensor) []string {
	var problems []string
	found := 0
	for _, s := range specs {
		t, ok := inputs[s.Name]
		if !ok {
			problems = append(problems, fmt.Sprintf("input %s is missing", s))
			continue
		}
		found++
		if p := validateTensor(s, t); p != "" {
			problems = append(problems, p)
		}
	}
	if len(inputs) > found {
		var unknown []string
		for name := range inputs {
			if !slices.ContainsFunc(specs, func(s TensorSpec) bool { return s.Name == name }) {
				unknown = append(unknown, fmt.Sprintf("%q", name))
			}
		}
		slices.Sort(unknown)
		problems = append(problems, fmt.Sprintf("unknown input %s (the model takes %s)",
			strings.Join(unknown, ", "), describeSpecs(specs)))
	}
	return problems
}

// validateTensor checks one input tensor against its spec and returns the
// problem, or "".
func validateTensor(s TensorSpec, t Tensor) string {
	et := t.ElemType()
	if et == "" {
		return fmt.Sprintf("input %q has no data (want %s %s)", s.Name, s.ElemType, formatShape(s.Shape))
	}
	if et != s.ElemType {
		return fmt.Sprintf("input %q is %s, the model takes %s", s.Name, et, s.ElemType)
	}
	if len(t.shape) != len(s.Shape) {
		return fmt.Sprintf("input %q has shape %s (rank %d), the model takes %s (rank %d)",
			s.Name, formatShape(t.shape), len(t.shape), formatShape(s.Shape), len(s.Shape))
	}
	for i, d := range t.shape {
		if d < 1 {
			return fmt.Sprintf("input %q has shape %s: dimension %d is %d, it must be at least 1",
				s.Name, formatShape(t.shape), i, d)
		}
		if want := s.Shape[i]; want != Dynamic && d != want {
			return fmt.Sprintf("input %q has shape %s, the model takes %s: dimension %d must be %d",
				s.Name, formatShape(t.shape), formatShape(s.Shape), i, want)
		}
	}
	n, err := elementCount(t.shape)
	if err != nil {
		return fmt.Sprintf("input %q: %v", s.Name, err)
	}
	if got := t.Len(); got != n {
		return fmt.Sprintf("input %q has %d values, its shape %s needs %d", s.Name, got, formatShape(t.shape), n)
	}
	return ""
}
