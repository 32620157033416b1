package bpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"unsafe"

	"github.com/aquasecurity/libbpfgo"
)

// encode returns the bytes of a fixed-size value (a struct of package tables, or an
// integer) as the programs read them.
func encode(v any) []byte {
	var b bytes.Buffer
	if err := binary.Write(&b, binary.LittleEndian, v); err != nil {
		panic(fmt.Sprintf("bpf: encode %T: %v", v, err)) // a programming error: layout types are fixed-size
	}
	return b.Bytes()
}

func decode(b []byte, v any) error {
	return binary.Read(bytes.NewReader(b), binary.LittleEndian, v)
}

func (e *Enforcer) put(name string, key, value any) error {
	k, v := encode(key), encode(value)
	if err := e.maps[name].Update(unsafe.Pointer(&k[0]), unsafe.Pointer(&v[0])); err != nil {
		return fmt.Errorf("bpf: update map %s: %w", name, err)
	}
	return nil
}

func (e *Enforcer) get(name string, key, value any) (bool, error) {
	k := encode(key)
	b, err := e.maps[name].GetValue(unsafe.Pointer(&k[0]))
	if errors.Is(err, syscall.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("bpf: read map %s: %w", name, err)
	}
	return true, decode(b, value)
}

func (e *Enforcer) del(name string, key any) error {
	k := encode(key)
	err := e.maps[name].DeleteKey(unsafe.Pointer(&k[0]))
	if err != nil && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("bpf: delete from map %s: %w", name, err)
	}
	return nil
}

// keys returns every key of a hash map, raw.
func keys(m *libbpfgo.BPFMap) ([][]byte, error) {
	var out [][]byte
	it := m.Iterator()
	for it.Next() {
		out = append(out, append([]byte(nil), it.Key()...))
	}
	return out, it.Err()
}
