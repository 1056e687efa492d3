package runtime

import (
	"slices"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// maxPooledSets bounds the tensor sets a model keeps between runs; more
// concurrent runs than this still work, their extra sets are destroyed.
const maxPooledSets = 16

// tensorSet is one run's worth of ONNX Runtime values over Go memory,
// reused across runs whose input shapes are the model's declared static
// shapes. Creating and destroying the values costs about as much as a
// whole run of a small sensor model (≈1 µs against ≈2.5 µs on the example
// model), and small models at high rates are what edge devices run most.
type tensorSet struct {
	ins  []ort.Value
	outs []ort.Value // nil where the output shape is dynamic
	ro   *ort.RunOptions
}

// pool holds a model's idle tensor sets. Sets are only used while the
// model is held, so close destroys them after the last run has ended.
type pool struct {
	mu   sync.Mutex
	sets []*tensorSet
}

// take returns a set holding a copy of inputs, or nil when inputs do not
// all have the static shapes the set is built for (the caller then makes
// one-off values). inputs have passed validateInputs.
func (s *model) take(inputs map[string]Tensor) *tensorSet {
	for _, spec := range s.inputs {
		if spec.hasDynamic() || !slices.Equal(inputs[spec.Name].shape, spec.Shape) {
			return nil
		}
	}
	s.pool.mu.Lock()
	var set *tensorSet
	if n := len(s.pool.sets); n > 0 {
		set, s.pool.sets = s.pool.sets[n-1], s.pool.sets[:n-1]
	}
	s.pool.mu.Unlock()
	if set == nil {
		var err error
		if set, err = s.newSet(); err != nil {
			return nil // the one-off path reports the error
		}
	}
	for i, spec := range s.inputs {
		if !copyInto(set.ins[i], inputs[spec.Name]) {
			s.put(set)
			return nil
		}
	}
	return set
}

// put returns set to the pool after a run, or destroys it when the pool
// is full. reuseRO is false when the run's options may have been told to
// terminate.
func (s *model) put(set *tensorSet) {
	for i, v := range set.outs {
		if !s.static[i] && v != nil {
			_ = v.Destroy() // allocated by ONNX Runtime for this run
			set.outs[i] = nil
		}
	}
	s.pool.mu.Lock()
	if len(s.pool.sets) < maxPooledSets {
		s.pool.sets = append(s.pool.sets, set)
		set = nil
	}
	s.pool.mu.Unlock()
	if set != nil {
		set.destroy()
	}
}

func (s *model) newSet() (*tensorSet, error) {
	set := &tensorSet{ins: make([]ort.Value, len(s.inputs)), outs: make([]ort.Value, len(s.outputs))}
	for i, spec := range s.inputs {
		z, err := Zeros(spec.ElemType, spec.Shape)
		if err == nil {
			set.ins[i], err = z.toORT()
		}
		if err != nil {
			set.destroy()
			return nil, err
		}
	}
	for i, spec := range s.outputs {
		if !s.static[i] {
			continue
		}
		z, err := Zeros(spec.ElemType, spec.Shape)
		if err == nil {
			set.outs[i], err = z.toORT()
		}
		if err != nil {
			set.destroy()
			return nil, err
		}
	}
	return set, nil
}

// drain destroys every pooled set; the model must not run again.
func (p *pool) drain() {
	p.mu.Lock()
	sets := p.sets
	p.sets = nil
	p.mu.Unlock()
	for _, set := range sets {
		set.destroy()
	}
}

func (set *tensorSet) destroy() {
	destroyAll(set.ins)
	destroyAll(set.outs)
	if set.ro != nil {
		_ = set.ro.Destroy()
	}
}

// copyInto copies src's data into the Go memory behind dst, reporting
// false when their types or lengths differ.
func copyInto(dst ort.Value, src Tensor) bool {
	switch d := src.data.(type) {
	case []float32:
		return copyData(dst, d)
	case []float64:
		return copyData(dst, d)
	case []int64:
		return copyData(dst, d)
	case []int32:
		return copyData(dst, d)
	case []uint8:
		return copyData(dst, d)
	case []bool:
		return copyData(dst, d)
	}
	return false
}

func copyData[T ort.TensorData](dst ort.Value, src []T) bool {
	t, ok := dst.(*ort.Tensor[T])
	if !ok {
		return false
	}
	data := t.GetData()
	if len(data) != len(src) {
		return false
	}
	copy(data, src)
	return true
}

// clone returns a copy of t that shares no memory with it.
func (t Tensor) clone() Tensor {
	c := Tensor{shape: append([]int64(nil), t.shape...)}
	switch d := t.data.(type) {
	case []float32:
		c.data = append([]float32(nil), d...)
	case []float64:
		c.data = append([]float64(nil), d...)
	case []int64:
		c.data = append([]int64(nil), d...)
	case []int32:
		c.data = append([]int32(nil), d...)
	case []uint8:
		c.data = append([]uint8(nil), d...)
	case []bool:
		c.data = append([]bool(nil), d...)
	}
	return c
}
