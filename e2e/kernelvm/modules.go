package main

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
)

// moduleTree indexes the .ko files of a kernel's module directory by module
// name. There is no modules.dep (depmod runs when a package is installed,
// and this one is only unpacked), so dependencies are read from each
// module's .modinfo section, which is what depmod reads too.
type moduleTree struct {
	root  string
	paths map[string]string // module name → path relative to root
}

// moduleName normalises a module or file name: the kernel treats - and _
// alike.
func moduleName(s string) string {
	s = filepath.Base(s)
	s = strings.TrimSuffix(s, ".ko")
	return strings.ReplaceAll(s, "-", "_")
}

func loadModuleTree(root string) (*moduleTree, error) {
	t := &moduleTree{root: root, paths: map[string]string{}}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".ko") {
			rel, _ := filepath.Rel(root, p)
			t.paths[moduleName(p)] = rel
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(t.paths) == 0 {
		return nil, fmt.Errorf("no uncompressed .ko modules under %s", root)
	}
	return t, nil
}

// depends reads the depends= field of a module's .modinfo.
func (t *moduleTree) depends(name string) ([]string, error) {
	rel, ok := t.paths[name]
	if !ok {
		return nil, fmt.Errorf("module %s not found under %s", name, t.root)
	}
	f, err := elf.Open(filepath.Join(t.root, rel))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("%s has no .modinfo section", rel)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, err
	}
	var deps []string
	for _, field := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(field, []byte("depends=")); ok && len(v) > 0 {
			for _, d := range strings.Split(string(v), ",") {
				deps = append(deps, moduleName(d))
			}
		}
	}
	return deps, nil
}

// loadOrder returns the modules named and everything they depend on, each
// after its dependencies, as paths relative to the module directory.
func (t *moduleTree) loadOrder(names []string) ([]string, error) {
	state := map[string]int{} // 1 visiting, 2 done
	var order []string
	var visit func(n string, from []string) error
	visit = func(n string, from []string) error {
		switch state[n] {
		case 2:
			return nil
		case 1:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(from, n), " → "))
		}
		state[n] = 1
		deps, err := t.depends(n)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, append(from, n)); err != nil {
				return err
			}
		}
		state[n] = 2
		order = append(order, t.paths[n])
		return nil
	}
	for _, n := range names {
		if err := visit(moduleName(n), nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// under lists the modules in the given directories (relative to the module
// root), sorted.
func (t *moduleTree) under(dirs []string) []string {
	var names []string
	for name, rel := range t.paths {
		for _, d := range dirs {
			if strings.HasPrefix(rel, strings.TrimSuffix(d, "/")+"/") {
				names = append(names, name)
				break
			}
		}
	}
	slices.Sort(names)
	return names
}
