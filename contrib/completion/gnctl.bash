# bash completion for gnctl: verbs, options, and machine names, snapshots, job ids and
# profiles asked of the running gnspawnd (of the -H host when one is given). Only what
# the verb would accept is offered: no existing name for build, only a machine's own
# snapshots for rollback, only unfinished jobs for cancel.

_gnctl() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local verbs="list snapshots jobs job update sync rollback build remove send prune profiles status config news logs cancel wait packages diff keep unkeep"
    local verb="" i resume=""
    local -a host=() args=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            -H|--host) host=(--host "${COMP_WORDS[i+1]}"); ((i++)) ;;
            --host=*) host=("${COMP_WORDS[i]}") ;;
            # The verb's options that take a value may come before it, too.
            --profile|-n|--lines|--tag) ((i++)) ;;
            --resume) resume=1 ;;
            -*) ;;
            *) if [[ -z $verb ]]; then verb=${COMP_WORDS[i]}; else args+=("${COMP_WORDS[i]}"); fi ;;
        esac
    done

    # The first column of a gnctl listing; with an awk condition, of the rows that meet it.
    _gnctl_column() {
        local condition=$1
        shift
        gnctl "${host[@]}" "$@" --no-legend 2>/dev/null | awk "${condition:-1} { print \$1 }"
    }

    if [[ $prev == -H || $prev == --host ]]; then
        COMPREPLY=($(compgen -A hostname -- "$cur"))
        return
    fi
    if [[ -z $verb && $cur != -* ]]; then
        COMPREPLY=($(compgen -W "$verbs" -- "$cur"))
        return
    fi
    if [[ $prev == --profile ]]; then
        COMPREPLY=($(compgen -W "$(_gnctl_column "" profiles)" -- "$cur"))
        return
    fi
    if [[ $prev == -n || $prev == --lines || $prev == --tag ]]; then
        return
    fi
    if [[ $cur == -* ]]; then
        local options="--help"
        local listing="--json --no-legend" following="--quiet --verbose"
        local waiting="$following --no-block --fail-if-busy"
        case $verb in
            "") options+=" --version --host" ;;
            list|snapshots|jobs|profiles|packages) options+=" $listing" ;;
            diff) options+=" --all $listing" ;;
            keep) options+=" --tag" ;;
            job|status) options+=" --json" ;;
            update) options+=" --all --scheduled --no-canary --pretend --keep-failed $waiting" ;;
            build) options+=" --profile --resume --keep-failed $waiting" ;;
            rollback|remove) options+=" $waiting" ;;
            send) options+=" --move $waiting" ;;
            config) options+=" --keep --replace --merge $waiting" ;;
            news) options+=" --read --json" ;;
            prune|sync) options+=" $following --no-block" ;;
            wait) options+=" $following" ;;
            logs) options+=" --follow --lines" ;;
        esac
        COMPREPLY=($(compgen -W "$options" -- "$cur"))
        return
    fi
    # gnspawn's machines: a foreign directory has no dataset to update, snapshot or remove,
    # and an unfinished build nothing to update yet.
    local ours='$2 != "foreign"'
    case $verb in
        update)
            COMPREPLY=($(compgen -W "$(_gnctl_column "$ours"' && $2 != "incomplete"' list)" -- "$cur")) ;;
        snapshots|remove|prune)
            ((${#args[@]} == 0)) &&
                COMPREPLY=($(compgen -W "$(_gnctl_column "$ours" list)" -- "$cur")) ;;
        send)
            # A machine of gnspawn's, then a host to send it to.
            if ((${#args[@]} == 0)); then
                COMPREPLY=($(compgen -W "$(_gnctl_column "$ours"' && $2 != "incomplete"' list)" -- "$cur"))
            elif ((${#args[@]} == 1)); then
                COMPREPLY=($(compgen -A hostname -- "$cur"))
            fi ;;
        status)
            ((${#args[@]} == 0)) && COMPREPLY=($(compgen -W "$(_gnctl_column "" list)" -- "$cur")) ;;
        rollback|packages|diff|keep|unkeep)
            local most=1
            [[ $verb == diff ]] && most=2
            if ((${#args[@]} == 0)); then
                COMPREPLY=($(compgen -W "$(_gnctl_column "$ours" list)" -- "$cur"))
            elif ((${#args[@]} <= most)); then
                # The machine's own snapshots (not those of its failed copies, COPY@SNAPSHOT).
                COMPREPLY=($(compgen -W "$(_gnctl_column '$1 !~ /@/' snapshots "${args[0]}")" -- "$cur"))
            fi ;;
        config)
            if ((${#args[@]} == 0)); then
                COMPREPLY=($(compgen -W "$(_gnctl_column "$ours" list)" -- "$cur"))
            elif ((${#args[@]} == 1)); then
                # The files with a new default waiting, as gnctl status lists them.
                local paths
                paths=$(gnctl "${host[@]}" status "${args[0]}" 2>/dev/null |
                    awk '$1 == "config-file:" { sub(/:$/, "", $2); print $2 }')
                COMPREPLY=($(compgen -W "$paths" -- "$cur"))
            fi ;;
        news)
            if ((${#args[@]} == 0)); then
                COMPREPLY=($(compgen -W "$(_gnctl_column "$ours" list)" -- "$cur"))
            else
                # The unread news items, as gnctl status lists them.
                local items
                items=$(gnctl "${host[@]}" status "${args[0]}" 2>/dev/null |
                    awk '$1 == "news:" { sub(/:$/, "", $2); print $2 }')
                COMPREPLY=($(compgen -W "$items" -- "$cur"))
            fi ;;
        build)
            # A new name, which nothing can offer; with --resume, an incomplete machine.
            [[ -n $resume ]] && ((${#args[@]} == 0)) &&
                COMPREPLY=($(compgen -W "$(_gnctl_column '$2 == "incomplete"' list)" -- "$cur")) ;;
        job)
            ((${#args[@]} == 0)) && COMPREPLY=($(compgen -W "$(_gnctl_column "" jobs)" -- "$cur")) ;;
        cancel)
            COMPREPLY=($(compgen -W "$(_gnctl_column '$4 != "finished"' jobs)" -- "$cur")) ;;
        wait)
            COMPREPLY=($(compgen -W "$(_gnctl_column "" jobs)" -- "$cur")) ;;
        logs)
            ((${#args[@]} == 0)) &&
                COMPREPLY=($(compgen -W "$(_gnctl_column "" list) $(_gnctl_column "" jobs)" -- "$cur")) ;;
    esac
}

complete -F _gnctl gnctl
