package io.github.bigmodel.chatglm.chat;

import io.github.bigmodel.chatglm.tokenizer.ChatGLM1Tokenizer;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM2Tokenizer;
import io.github.bigmodel.chatglm.tokenizer.ChatGLM3Tokenizer;
import io.github.bigmodel.chatglm.tokenizer.ChatTokenizer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/** What differs between the three chat generations: prompt ids, stop ids, decoding and response processing. */
abstract class PromptFormat {

    static final String TIME_PLACEHOLDER = "[[训练时间]]";

    abstract ChatFormat format();

    abstract int[] promptIds(String query, List<ChatMessage> history, String role);

    abstract int[] stopIds();

    /** The text of generated ids (stop tokens excluded) before response processing. */
    abstract String rawDecode(int[] ids);

    /** The reply text as it would be if generation ended with {@code raw}; {@code finished}: it did. */
    abstract String display(String raw, boolean finished);

    /** Characters at the end of {@code display} that later text may still change. */
    int holdBack(String display) {
        return longestPendingSuffix(display, List.of(TIME_PLACEHOLDER));
    }

    /** THUDM's bookkeeping after generation; {@code generated} ends with a stop id when there was one. */
    abstract ChatResponse finish(String query, String role, List<ChatMessage> history, int[] promptIds,
                                 int[] generated, FinishReason reason);

    static PromptFormat of(ChatTokenizer tokenizer) {
        if (tokenizer instanceof ChatGLM3Tokenizer t) {
            return new Glm3(t);
        }
        if (tokenizer instanceof ChatGLM2Tokenizer t) {
            return new Glm2(t);
        }
        if (tokenizer instanceof ChatGLM1Tokenizer t) {
            return new Glm1(t);
        }
        throw new IllegalArgumentException("Unsupported tokenizer " + tokenizer.getClass().getName());
    }

    /** The longest suffix of {@code text} that is a proper, non-empty prefix of one of {@code patterns}. */
    static int longestPendingSuffix(String text, List<String> patterns) {
        int best = 0;
        for (String p : patterns) {
            for (int n = Math.min(p.length() - 1, text.length()); n > best; n--) {
                if (text.regionMatches(text.length() - n, p, 0, n)) {
                    best = n;
                    break;
                }
            }
        }
        return best;
    }

    static List<ChatRound> rounds(List<ChatMessage> history, ChatFormat format) {
        List<ChatRound> out = new ArrayList<>();
        if (history == null) {
            return out;
        }
        if (history.size() % 2 != 0) {
            throw new IllegalArgumentException(format + " history must be user/assistant pairs, got "
                    + history.size() + " messages");
        }
        for (int i = 0; i < history.size(); i += 2) {
            ChatMessage q = history.get(i);
            ChatMessage r = history.get(i + 1);
            if (!q.role().equals("user") || !r.role().equals("assistant")) {
                throw new IllegalArgumentException(format + " history must alternate user and assistant messages; "
                        + "messages " + i + ".." + (i + 1) + " are " + q.role() + ", " + r.role());
            }
            out.add(new ChatRound(q.content(), r.content()));
        }
        return out;
    }

    static List<ChatMessage> messages(List<ChatRound> rounds) {
        List<ChatMessage> out = new ArrayList<>();
        for (ChatRound r : rounds) {
            out.add(ChatMessage.of("user", r.query()));
            out.add(ChatMessage.of("assistant", r.response()));
        }
        return out;
    }

    static void requireUser(String role, ChatFormat format) {
        if (!"user".equals(role)) {
            throw new IllegalArgumentException(format + " has no roles: only 'user' messages, got '" + role + "'");
        }
    }

    static boolean contains(int[] ids, int id) {
        for (int s : ids) {
            if (s == id) {
                return true;
            }
        }
        return false;
    }

    static final class Glm3 extends PromptFormat {
        private final ChatGLM3Tokenizer tok;

        Glm3(ChatGLM3Tokenizer tok) {
            this.tok = tok;
        }

        @Override
        ChatFormat format() {
            return ChatFormat.CHATGLM3;
        }

        @Override
        int[] promptIds(String query, List<ChatMessage> history, String role) {
            return tok.buildChatInput(query, history == null ? List.of() : history, role).inputIds();
        }

        @Override
        int[] stopIds() {
            return tok.stopTokenIds();
        }

        @Override
        String rawDecode(int[] ids) {
            return tok.decode(tokenizerIds(ids, tok.vocabSize()));
        }

        @Override
        String display(String raw, boolean finished) {
            int cut = raw.lastIndexOf("<|assistant|>");
            String last = cut < 0 ? raw : raw.substring(cut + "<|assistant|>".length());
            if (!finished && last.indexOf('\n') < 0) {
                // Until the first line ends, it may be a tool name (metadata) rather than text.
                return "";
            }
            // No tools in this history: a named segment yields its content without parsing a call.
            AssistantReply reply = tok.processResponse(last, List.of()).reply();
            return replyText(reply);
        }

        private static String replyText(AssistantReply reply) {
            if (reply instanceof AssistantReply.Text t) {
                return t.text();
            }
            return ((AssistantReply.Named) reply).content();
        }

        @Override
        ChatResponse finish(String query, String role, List<ChatMessage> history, int[] promptIds, int[] generated,
                            FinishReason reason) {
            // THUDM's chat() drops the last id as the stop token; when the budget ran out there is none, so one
            // is appended to keep the last real token.
            int[] ids = generated;
            if (reason != FinishReason.STOP) {
                ids = Arrays.copyOf(generated, generated.length + 1);
                ids[generated.length] = tok.eosTokenId();
            }
            ChatGLM3Tokenizer.Turn turn = tok.finishTurn(query, role, history == null ? List.of() : history, ids);
            List<ChatMessage> h = turn.history();
            String text = turn.reply() instanceof AssistantReply.Text t ? t.text() : h.get(h.size() - 1).content();
            return new ChatResponse(text, turn.reply(), h, turn.decodedOutput(), promptIds, generated, reason);
        }
    }

    static final class Glm2 extends PromptFormat {
        private final ChatGLM2Tokenizer tok;

        Glm2(ChatGLM2Tokenizer tok) {
            this.tok = tok;
        }

        @Override
        ChatFormat format() {
            return ChatFormat.CHATGLM2;
        }

        @Override
        int[] promptIds(String query, List<ChatMessage> history, String role) {
            requireUser(role, format());
            return tok.buildInputs(query, rounds(history, format())).inputIds();
        }

        @Override
        int[] stopIds() {
            return new int[] {tok.eosTokenId()};
        }

        @Override
        String rawDecode(int[] ids) {
            return tok.decode(tokenizerIds(ids, tok.vocabSize()));
        }

        @Override
        String display(String raw, boolean finished) {
            return tok.processResponse(raw);
        }

        @Override
        ChatResponse finish(String query, String role, List<ChatMessage> history, int[] promptIds, int[] generated,
                            FinishReason reason) {
            ChatGLM2Tokenizer.Turn turn = tok.finishTurn(query, rounds(history, format()), generated);
            return new ChatResponse(turn.response(), new AssistantReply.Text(turn.response()),
                    messages(turn.history()), turn.decodedOutput(), promptIds, generated, reason);
        }
    }

    static final class Glm1 extends PromptFormat {
        // transformers' clean_up_tokenization patterns: a suffix that starts one may still be rewritten.
        private static final List<String> PENDING = List.of(TIME_PLACEHOLDER, " .", " ?", " !", " ,", " ' ",
                " n't", " 'm", " 's", " 've", " 're");
        private static final String HALF_WIDTH = ",!:;?";
        private final ChatGLM1Tokenizer tok;

        Glm1(ChatGLM1Tokenizer tok) {
            this.tok = tok;
        }

        @Override
        ChatFormat format() {
            return ChatFormat.CHATGLM_6B;
        }

        @Override
        int[] promptIds(String query, List<ChatMessage> history, String role) {
            requireUser(role, format());
            return tok.encode(tok.buildPrompt(query, rounds(history, format())));
        }

        @Override
        int[] stopIds() {
            return new int[] {tok.eosTokenId()};
        }

        @Override
        String rawDecode(int[] ids) {
            // Without clean-up: it rewrites across token boundaries, so display() applies it to the whole text.
            return tok.decode(tokenizerIds(ids, tok.vocabSize()), false, false);
        }

        @Override
        String display(String raw, boolean finished) {
            return tok.processResponse(ChatGLM1Tokenizer.cleanUpTokenization(raw));
        }

        @Override
        int holdBack(String display) {
            int n = longestPendingSuffix(display, PENDING);
            // A half-width mark becomes full-width when a CJK ideograph follows it.
            if (n == 0 && !display.isEmpty() && HALF_WIDTH.indexOf(display.charAt(display.length() - 1)) >= 0) {
                n = 1;
            }
            return n;
        }

        @Override
        ChatResponse finish(String query, String role, List<ChatMessage> history, int[] promptIds, int[] generated,
                            FinishReason reason) {
            ChatGLM1Tokenizer.Turn turn = tok.finishTurn(query, rounds(history, format()), generated);
            return new ChatResponse(turn.response(), new AssistantReply.Text(turn.response()),
                    messages(turn.history()), turn.decodedOutput(), promptIds, generated, reason);
        }
    }

    /**
     * The generated ids the tokenizer knows: the model's padded vocabulary is larger than the tokenizer's, and THUDM's
     * {@code _convert_id_to_token} turns those extra ids into empty text, so dropping them decodes the same text
     * (also when a tokenizer's {@code decode} would not accept them).
     */
    static int[] tokenizerIds(int[] ids, int tokenizerVocab) {
        for (int id : ids) {
            if (id >= tokenizerVocab) {
                return java.util.Arrays.stream(ids).filter(x -> x < tokenizerVocab).toArray();
            }
        }
        return ids;
    }
}
