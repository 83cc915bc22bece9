package nvmlcalls

import (
	"strings"
	"testing"
)

func TestTheTableIsWhatTheGeneratorTakes(t *testing.T) {
	if err := check(Methods); err != nil {
		t.Fatal(err)
	}
}

func TestRowsTheGeneratorWouldGetWrongAreRefused(t *testing.T) {
	one := Method{Name: "GetPowerUsage", Results: []string{"uint32"}}
	cases := []struct {
		name string
		rows []Method
		want string
	}{
		{"no results", []Method{{Name: "GetX"}}, `method "GetX": a name and at least one result`},
		{"twice", []Method{one, one}, "GetPowerUsage: listed twice"},
		{"two results, no JSON type", []Method{{Name: "GetX", Results: []string{"int", "int"}}}, "without a JSON type it has one result"},
		{"JSON type without fields", []Method{{Name: "GetX", Results: []string{"int"}, JSON: "xJSON"}}, "JSON type xJSON maps no fields"},
		{"field of no result", []Method{{Name: "GetX", Results: []string{"int"}, JSON: "xJSON", Fields: []Field{{"v1", "A"}}}},
			`field A holds "v1", not one of its results`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := check(c.rows)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to contain %q", err, c.want)
			}
		})
	}
}

func TestTheKeyIsTheCallAsWritten(t *testing.T) {
	for _, c := range []struct {
		m    Method
		want string
	}{
		{Method{Name: "GetPowerUsage"}, `"GetPowerUsage()"`},
		{Method{Name: "GetTotalEccErrors", Args: []Arg{{"t", "T"}, {"c", "C"}}},
			`"GetTotalEccErrors(" + strconv.Itoa(int(t)) + "," + strconv.Itoa(int(c)) + ")"`},
	} {
		if got := key(c.m); got != c.want {
			t.Errorf("key(%s) = %s, want %s", c.m.Name, got, c.want)
		}
	}
}
