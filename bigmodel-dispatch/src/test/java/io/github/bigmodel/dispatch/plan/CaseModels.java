package io.github.bigmodel.dispatch.plan;

import com.fasterxml.jackson.databind.JsonNode;
import io.github.bigmodel.core.DType;
import io.github.bigmodel.core.Module;
import io.github.bigmodel.core.Parameter;
import java.util.ArrayList;
import java.util.List;

/** Builds a reference case's module tree on meta as generic {@link Module} nodes. */
final class CaseModels {

    private CaseModels() {
    }

    /** The case's {@code model}, with its {@code tied_parameters} groups tied to their first name. */
    static Module build(JsonNode caseJson) {
        Module root = node(caseJson.get("model"));
        JsonNode tied = caseJson.get("tied_parameters");
        if (tied != null && tied.isArray()) {
            for (JsonNode group : tied) {
                String owner = group.get(0).asText();
                for (int i = 1; i < group.size(); i++) {
                    root.tie(group.get(i).asText(), owner);
                }
            }
        }
        return root;
    }

    private static Module node(JsonNode n) {
        Module m = new Module(n.get("class").asText());
        for (JsonNode p : n.path("params")) {
            m.registerParameter(p.get("name").asText(), tensor(p));
        }
        for (JsonNode b : n.path("buffers")) {
            m.registerBuffer(b.get("name").asText(), tensor(b), b.path("persistent").asBoolean(true));
        }
        for (JsonNode c : n.path("children")) {
            m.registerModule(c.get("name").asText(), node(c));
        }
        return m;
    }

    private static Parameter tensor(JsonNode t) {
        List<Long> dims = new ArrayList<>();
        t.get("shape").forEach(d -> dims.add(d.asLong()));
        return Parameter.empty(DType.parse(t.get("dtype").asText()), dims.stream().mapToLong(Long::longValue).toArray());
    }
}
