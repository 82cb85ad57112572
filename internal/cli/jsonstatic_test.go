package cli

import (
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// Every value the package prints as JSON - the argument of each printJSON
// or Encode call, and what each (any, string, error) result function
// returns for --json - has snake_case names all the way down. The types
// come from the compiler, so a command added later is checked too.
func TestEveryJSONOutputIsSnakeCase(t *testing.T) {
	list, err := exec.Command("go", "list", "-export", "-deps", "-f", "{{.ImportPath}}\t{{.Export}}", ".").Output()
	if err != nil {
		t.Fatalf("go list -export: %v", err)
	}
	exports := map[string]string{}
	for _, line := range strings.Split(string(list), "\n") {
		if path, file, ok := strings.Cut(line, "\t"); ok && file != "" {
			exports[path] = file
		}
	}
	names, err := exec.Command("go", "list", "-f", `{{join .GoFiles "\n"}}`, ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, name := range strings.Fields(string(names)) {
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	conf := types.Config{Importer: importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) { return os.Open(exports[path]) })}
	info := &types.Info{Types: map[ast.Expr]types.TypeAndValue{}}
	if _, err := conf.Check("github.com/superinstance/mesh/internal/cli", fset, files, info); err != nil {
		t.Fatal(err)
	}

	seen := map[types.Type]bool{}
	checked := 0
	var check func(e ast.Expr)
	check = func(e ast.Expr) {
		at := fset.Position(e.Pos()).String()
		if lit, ok := e.(*ast.CompositeLit); ok {
			if _, isMap := info.TypeOf(lit).Underlying().(*types.Map); isMap {
				for _, elt := range lit.Elts {
					kv := elt.(*ast.KeyValueExpr)
					if k, ok := kv.Key.(*ast.BasicLit); ok && k.Kind == token.STRING {
						if name, _ := strconv.Unquote(k.Value); !snakeCase.MatchString(name) {
							t.Errorf("%s: JSON key %q is not snake_case", at, name)
						}
					}
					check(kv.Value)
				}
				checked++
				return
			}
		}
		typ := info.TypeOf(e)
		if typ == nil || types.IsInterface(typ) {
			return
		}
		checked++
		for _, bad := range typeJSONNames(typ, seen) {
			t.Errorf("%s: --json prints %s", at, bad)
		}
	}
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				switch fn := n.Fun.(type) {
				case *ast.Ident:
					if fn.Name == "printJSON" && len(n.Args) == 2 {
						check(n.Args[1])
					}
				case *ast.SelectorExpr:
					if fn.Sel.Name == "Encode" && len(n.Args) == 1 {
						check(n.Args[0])
					}
				}
			case *ast.FuncLit:
				if r := n.Type.Results; r != nil && len(r.List) == 3 && types.IsInterface(info.TypeOf(r.List[0].Type)) &&
					types.ExprString(r.List[1].Type) == "string" && types.ExprString(r.List[2].Type) == "error" {
					ast.Inspect(n.Body, func(m ast.Node) bool {
						if _, nested := m.(*ast.FuncLit); nested {
							return false
						}
						if ret, ok := m.(*ast.ReturnStmt); ok && len(ret.Results) == 3 {
							check(ret.Results[0])
						}
						return true
					})
				}
			}
			return true
		})
	}
	if checked < 20 {
		t.Fatalf("only %d JSON outputs found: the search is broken", checked)
	}
}

// typeJSONNames lists the fields of t that encoding/json prints under a
// name that is not snake_case.
func typeJSONNames(t types.Type, seen map[types.Type]bool) []string {
	var bad []string
	var walk func(t types.Type, path string)
	walk = func(t types.Type, path string) {
		for {
			switch u := types.Unalias(t).(type) {
			case *types.Pointer:
				t = u.Elem()
				continue
			case *types.Slice:
				t = u.Elem()
				continue
			case *types.Array:
				t = u.Elem()
				continue
			case *types.Map:
				t = u.Elem()
				continue
			}
			break
		}
		if seen[t] {
			return
		}
		seen[t] = true
		if n, ok := types.Unalias(t).(*types.Named); ok {
			for _, m := range []string{"MarshalJSON", "MarshalText"} {
				if o, _, _ := types.LookupFieldOrMethod(types.NewPointer(n), true, nil, m); o != nil {
					return // prints as one value (time.Time, json.RawMessage)
				}
			}
			path = n.Obj().Name()
		}
		st, ok := t.Underlying().(*types.Struct)
		if !ok {
			return
		}
		for i := range st.NumFields() {
			f := st.Field(i)
			if !f.Exported() && !f.Embedded() {
				continue
			}
			tag, _, _ := strings.Cut(reflect.StructTag(st.Tag(i)).Get("json"), ",")
			switch {
			case tag == "-":
				continue
			case f.Embedded() && tag == "":
				walk(f.Type(), path)
				continue
			}
			name := tag
			if name == "" {
				name = f.Name()
			}
			if !snakeCase.MatchString(name) {
				bad = append(bad, path+"."+f.Name()+" as "+name)
			}
			walk(f.Type(), path+"."+f.Name())
		}
	}
	walk(t, t.String())
	return bad
}
