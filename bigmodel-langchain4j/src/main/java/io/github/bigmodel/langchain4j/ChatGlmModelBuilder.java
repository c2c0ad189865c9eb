package io.github.bigmodel.langchain4j;

import dev.langchain4j.model.chat.request.ChatRequestParameters;
import io.github.bigmodel.chatglm.chat.ChatGLM;
import java.util.List;

/** The settings both models share, in LangChain4j's builder style. */
abstract class ChatGlmModelBuilder<B extends ChatGlmModelBuilder<B>> {

    ChatGLM glm;
    String modelName = "chatglm";
    Double temperature;
    Double topP;
    Integer topK;
    Integer maxOutputTokens;
    List<String> stopSequences;
    Long seed;

    @SuppressWarnings("unchecked")
    private B self() {
        return (B) this;
    }

    /** The loaded model (required); the caller closes it. */
    public B chatGlm(ChatGLM glm) {
        this.glm = glm;
        return self();
    }

    /** The name reported in responses (default {@code chatglm}). */
    public B modelName(String modelName) {
        this.modelName = modelName;
        return self();
    }

    /** 0 decodes greedily; null takes THUDM's chat default. */
    public B temperature(Double temperature) {
        if (temperature != null && (temperature < 0 || !Double.isFinite(temperature))) {
            throw new IllegalArgumentException("temperature must be >= 0, got " + temperature);
        }
        this.temperature = temperature;
        return self();
    }

    public B topP(Double topP) {
        if (topP != null && (topP <= 0 || topP > 1)) {
            throw new IllegalArgumentException("topP must be in (0, 1], got " + topP);
        }
        this.topP = topP;
        return self();
    }

    public B topK(Integer topK) {
        if (topK != null && topK < 0) {
            throw new IllegalArgumentException("topK must be >= 0, got " + topK);
        }
        this.topK = topK;
        return self();
    }

    public B maxOutputTokens(Integer maxOutputTokens) {
        if (maxOutputTokens != null && maxOutputTokens < 1) {
            throw new IllegalArgumentException("maxOutputTokens must be >= 1, got " + maxOutputTokens);
        }
        this.maxOutputTokens = maxOutputTokens;
        return self();
    }

    public B stopSequences(List<String> stopSequences) {
        this.stopSequences = stopSequences == null ? null : List.copyOf(stopSequences);
        return self();
    }

    /** The sampling seed of every request (default: a fresh one each time). */
    public B seed(Long seed) {
        this.seed = seed;
        return self();
    }

    ChatGLM requireGlm() {
        if (glm == null) {
            throw new IllegalArgumentException("chatGlm(...) is required");
        }
        return glm;
    }

    ChatRequestParameters parameters() {
        return ChatRequestParameters.builder().modelName(modelName).temperature(temperature).topP(topP).topK(topK)
                .maxOutputTokens(maxOutputTokens).stopSequences(stopSequences).build();
    }
}
