package workers

import (
	"context"
	"fmt"

	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/superinstance/mesh/workflows"
)

// RegisterSearchAttributes adds the mesh's custom search attributes
// (workflows.SearchAttributes) that the namespace lacks. It is safe to call
// on every start.
func RegisterSearchAttributes(ctx context.Context, c client.Client, namespace string) error {
	have, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: namespace})
	if err != nil {
		return fmt.Errorf("search attributes of namespace %s: %w", namespace, err)
	}
	missing := workflows.SearchAttributes()
	for name, typ := range missing {
		got, ok := have.GetCustomAttributes()[name]
		if !ok {
			continue
		}
		if got != typ {
			return fmt.Errorf("search attribute %s of namespace %s is a %s; the mesh needs a %s", name, namespace, got, typ)
		}
		delete(missing, name)
	}
	if len(missing) == 0 {
		return nil
	}
	_, err = c.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
		Namespace: namespace, SearchAttributes: missing})
	if err != nil {
		return fmt.Errorf("registering search attributes in namespace %s: %w", namespace, err)
	}
	return nil
}
